"""Warren: real-time messaging over SockJS + STOMP with a RabbitMQ backplane."""

"""Sign-in: the user directory, cookie sessions and the origin policy."""

"""Warren's benchmark: ``python -m bench`` (or ``make bench``) prints one table, Warren beside python-socketio
(``AsyncServer`` + ``AsyncAioPikaManager``) and the broker-path ceiling (raw aio-pika), with the ratios and the
targets of issue 7. ``python -m bench --help`` lists the subsets and options.
"""

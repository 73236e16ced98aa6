"""Worker side: PEFT modules, data, and the trial runner. Never imports SQLAlchemy or the server."""

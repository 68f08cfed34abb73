"""agent-runtime: an event-driven agent loop for models you run yourself."""

"""Vector and episodic memory land here; they import only `agent` protocols."""

"""Live answer streams: the hub and its replay buffers, the producer task, and the relay that sends a
stream to a client."""

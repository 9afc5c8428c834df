"""Downloads (resumable, checksummed, atomic, with mirrors) and safe archive extraction."""

"""One module per screen; each composes widgets and calls core in workers."""

"""QLoRA/RAFT workshop library: the notebooks show, this package does."""
__version__ = "0.1.0"

"""What a run leaves for people to read: Markdown/HTML reports, plots, and the adapter published."""

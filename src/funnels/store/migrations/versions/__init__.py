"""The revisions, oldest first. Each is written out by hand (never from `state.metadata`), so it stays what
it was when the models change."""

"""``veil demo``: a simulated LLM application (``app``) and the runner that shows it in a live collector."""

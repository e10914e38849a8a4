"""One router per module; ``veil_collector.app`` mounts them."""

"""HTTP routes, one router per resource (scores, model, health)."""

"""Missed runs made loud: overdue slots, failure streaks, no beat (docs/operating.md, "Alerts")."""

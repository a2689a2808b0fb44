"""Futures math: roll schedules, back-adjustment, roll costs."""

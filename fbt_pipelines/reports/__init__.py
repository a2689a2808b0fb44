"""Tear sheets and exports."""

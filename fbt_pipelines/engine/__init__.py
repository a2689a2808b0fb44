"""Backtest engines and strategy templates."""

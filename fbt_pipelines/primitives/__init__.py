"""Building blocks written once and imported downward by every package.

Returns of the held contract, Wilder smoothing, RSI, ATR, annualisation,
Sharpe, equity validation, content hashes.
"""

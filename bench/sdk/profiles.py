"""The budget profiles every method defines, lightest first.

Its own module, free of torch, so that the command line checks a profile name before it imports anything heavy.
"""

from __future__ import annotations

PROFILES = ("smoke", "quick", "standard", "paper")

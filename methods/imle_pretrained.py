"""`imle` starting from a generator pretrained with IMLE on the base classes, then trained on the support set.

A separate registry entry so that the papers' protocol (`imle`: from scratch on the support images
only) and the transfer protocol are never mixed in one leaderboard row. Pretraining:
`methods/_imle.py` (`IMLEMethod._pretrain`).
"""

from methods import register
from methods._imle import PretrainedIMLE
from methods.imle import IMLE


@register
class IMLEPretrained(PretrainedIMLE, IMLE):
    title = IMLE.title.replace("from scratch on the support set", "generator pretrained on the base classes")

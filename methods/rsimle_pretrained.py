"""`rsimle` starting from a generator pretrained with IMLE on the base classes, then trained on the support set.

A separate registry entry so that the papers' protocol (`rsimle`: from scratch on the support images
only) and the transfer protocol are never mixed in one leaderboard row. Pretraining:
`methods/_imle.py` (`IMLEMethod._pretrain`).
"""

from methods import register
from methods._imle import PretrainedIMLE
from methods.rsimle import RejectionSamplingIMLE


@register
class RejectionSamplingIMLEPretrained(PretrainedIMLE, RejectionSamplingIMLE):
    title = RejectionSamplingIMLE.title.replace(
        "from scratch on the support set", "generator pretrained on the base classes"
    )

"""Memorisation that survives small shifts: pixel MSE to the nearest support image under any small translation.

    support_nn_shift_mse = (1/n) sum_i  min_{k in K, |dx|,|dy| <= s}  MSE(s_i, shift(x_k, dx, dy))

with integer shifts up to s pixels (setting `shift_pixels`, default 2: the augmentation's
maximum) and edge-replicating padding. A sample that is a support image moved by a pixel or
two scores as near 0 as an exact copy; read it next to `support_nn_mse` and the reference rows.
"""

from metrics import EvalInputs, Metric, MetricResult, Tolerance, register
from metrics._nearest import ShiftSettings, nearest_by_mse, shifted_copies


def support_nearest_shifted_mse(inputs: EvalInputs) -> MetricResult:
    max_shift = inputs.settings_as(ShiftSettings).shift_pixels
    _, mse = nearest_by_mse(inputs.samples, shifted_copies(inputs.support, max_shift))
    return MetricResult(
        float(mse.mean()),
        {"fraction_below_1e-3": float((mse < 1e-3).double().mean())},
        {
            "max_shift_pixels": max_shift,
            "padding": "replicate",
            "shifts": f"all integer (dy, dx) with |dy|, |dx| <= {max_shift}",
        },
    )


METRIC = register(
    Metric(
        compute=support_nearest_shifted_mse,
        higher_is_better=None,
        needs=frozenset({"support"}),
        version="1",
        reference="this benchmark (memorisation diagnostic)",
        definition=(
            "For each sample, the smallest pixel MSE to any support image translated by up to `shift_pixels` (default 2) "
            "pixels in each direction; the mean over samples. 0 for copies and shifted copies."
        ),
        display_order=420,
        settings=ShiftSettings,
        # Exactly 0 for the copy reference rows, where a relative band is no band at all.
        tolerance=Tolerance(absolute=1e-6),
        roles=frozenset({"copying"}),
    ),
    __name__,
)

"""The allowed values of a quantizer's options, and their one-line errors.

`check_bits` (a method's bit widths) and `check_number` against an `Interval` (`POSITIVE`,
`NON_NEGATIVE`, `UNIT` or a method's own): every quantizer checks its arguments here, through
`Quantizer.__init__` and `Quantizer.number`, so each error names the option, the method and
the allowed range the same way.

Example:

>>> check_number("pact", "alpha_init", 6, POSITIVE)
6.0
>>> check_bits("lsq", 1, range(2, 9))
Traceback (most recent call last):
...
ValueError: Invalid bits=1 for quantizer 'lsq': expected an integer in [2, 8].
"""

import math
import numbers


class Interval:
    """Allowed values of a numeric quantizer option: finite numbers from `low` to `high`
    (None: unbounded), `low` itself excluded when `low_open`; `text` is the error's wording."""

    def __init__(self, low=None, high=None, low_open=False):
        self.low, self.high, self.low_open = low, high, low_open
        if high is not None:
            self.text = f"a number in [{low}, {high}]"
        else:
            self.text = f"a finite number {'>' if low_open else '>='} {low}"

    def __contains__(self, value):
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or value <= self.high


POSITIVE = Interval(0, low_open=True)  # a scale, clip level or step: 0 or less gives 0 / NaN
NON_NEGATIVE = Interval(0)
UNIT = Interval(0, 1)  # a decay / momentum


def _bits_text(allowed):
    allowed = sorted(allowed)
    if len(allowed) == 1:
        return f"{allowed[0]} (the only width it has)"
    if allowed == list(range(allowed[0], allowed[-1] + 1)):
        return f"an integer in [{allowed[0]}, {allowed[-1]}]"
    return f"one of {', '.join(str(b) for b in allowed)}"


def check_bits(method, bits, allowed, name="bits"):
    """`bits` as an int when it is one of `allowed`, else a one-line ValueError naming `name`
    and the allowed range, e.g. "Invalid bits=-1 for quantizer 'lsq': expected an integer in
    [2, 8]." (an app can pass its flag as `name`, e.g. "--wbits").

    >>> check_bits("lsq", 4, range(2, 9))
    4
    """
    whole = (isinstance(bits, numbers.Integral) and not isinstance(bits, bool)) or (
        isinstance(bits, float) and bits.is_integer())
    if not whole or int(bits) not in tuple(allowed):
        raise ValueError(f"Invalid {name}={bits!r} for quantizer {method!r}: expected "
                         f"{_bits_text(allowed)}.")
    return int(bits)


def check_number(method, name, value, allowed):
    """`value` as a float when it is a number in the `Interval` `allowed`, else a one-line
    ValueError naming the option and the range (NaN, inf, bools and words are refused).

    >>> check_number("pact", "alpha_init", 6, POSITIVE)
    6.0
    """
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not number or float(value) not in allowed:
        raise ValueError(f"Invalid {name}={value!r} for quantizer {method!r}: expected "
                         f"{allowed.text}.")
    return float(value)

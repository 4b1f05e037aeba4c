"""`--layer_regex`: the one check and filter of a layer-name pattern (re.fullmatch), shared by
the auto-builder (`quadkeras.autobuilder.candidates`) and `quadratize`.

Example:

>>> filter_by_layer_regex(["stem_conv", "stage1_conv"], "stage.*")
['stage1_conv']
>>> regex_problem("stage[12]_.*"), regex_problem("(")
(None, 'not a regular expression (missing ), unterminated subpattern at position 0)')
"""

import re


def regex_problem(regex):
    """None when `regex` compiles, else what is wrong with it, in words (from `re.error`)."""
    try:
        re.compile(regex)
    except re.error as err:
        return f"not a regular expression ({err})"
    return None


def compile_layer_regex(regex):
    """`re.compile(regex)`, or a one-line ValueError naming `layer_regex` and the regex error
    (a malformed pattern raises `re.error`, which is no ValueError and so kept a traceback)."""
    problem = regex_problem(regex)
    if problem:
        raise ValueError(f"Invalid layer_regex={regex!r}: {problem}.")
    return re.compile(regex)


def filter_by_layer_regex(names, regex, kind="candidate"):
    """The `names` that `regex` fully matches (re.fullmatch); a one-line ValueError naming
    `layer_regex` and the names it could have matched when none does."""
    pattern = compile_layer_regex(regex)
    chosen = [n for n in names if pattern.fullmatch(n)]
    if not chosen:
        raise ValueError(f"Invalid layer_regex={regex!r}: matches no {kind} layer; expected a "
                         f"pattern over {', '.join(names)}.")
    return chosen

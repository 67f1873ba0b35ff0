"""How the app words counts: "1 image", "2 images", never "1 image(s)" (plain Python).

Example:
    >>> plural(1, "image"), plural(3, "image"), plural(0, "file")
    ('1 image', '3 images', '0 files')
    >>> plural(2, "duplicate upload"), plural(1, "was", "were", with_count=False)
    ('2 duplicate uploads', 'was')
"""

from __future__ import annotations


def plural(
    count: int, singular: str, plural_form: str | None = None, *, with_count: bool = True
) -> str:
    """``count`` and the noun in the form that agrees with it (``plural_form`` for irregular
    words, otherwise the singular plus "s"); ``with_count=False`` gives the word alone.

    Example:
        >>> plural(1, "case"), plural(5, "this", "these", with_count=False)
        ('1 case', 'these')
    """
    word = singular if count == 1 else (plural_form or f"{singular}s")
    return f"{count} {word}" if with_count else word

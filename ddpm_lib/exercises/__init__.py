"""Checks for the book's code exercises: one module per chapter (``ch01`` ... ``ch11``).

A code exercise asks the reader to write or change a function; its check, ``check_<name>(fn)``, runs the reader's
function against an independent reference and raises ``AssertionError`` with a hint when it is wrong. The
solution cell of each exercise calls the check on the reference solution (CI runs it), and ``tests/`` shows that
each check rejects the wrong answers a student would plausibly give.
"""

"""The test suite: unit/, stages/, integration/ and e2e/ (README "Tests"); shared helpers here.

A package, so every test module has one name (`tests.<folder>.test_x`) whether pytest collects it
or another test imports from it.
"""

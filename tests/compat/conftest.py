"""The Bytewax 0.17.2 compatibility tests.

``examples_0172/`` and ``scenarios_0172/`` hold scripts that run flows when
they are imported; they are run as commands by the tests, never collected
(``--doctest-modules`` would import them).
"""

collect_ignore = ["examples_0172", "scenarios_0172"]

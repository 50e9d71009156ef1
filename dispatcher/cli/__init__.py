"""The command line: `dispatcher ...` (`main`), its output (`console`), the dead-letter
commands (`dlq`), the long-running processes it starts (`processes`), and `dispatcher
run` (`runner`) with its embedded Redis (`embedded`) and `--demo` (`demo`).
"""

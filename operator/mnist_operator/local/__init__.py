"""The local runner: the operator's pipeline on one machine, no cluster.

It reads the same MnistServing YAML a cluster gets, asks the same pure
pipeline functions what to run, and runs the stage CLIs as subprocesses
instead of Jobs (Triton itself runs through the ``serve`` stage).
"""

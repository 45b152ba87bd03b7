"""The API: the typed MnistServing spec (the CRD, its CEL rules and the reference
are generated from it), the words every layer shares, the stage table and the
operator-wide defaults. Pure; imports nothing else of the operator."""

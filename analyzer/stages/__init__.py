"""The analysis stages: pure functions, samples (or features) and frozen params in, a typed result out.

One module per stage (`rhythm`, `key`, `segments`, `sections`, `loudness`, ...), plus what they share:
`audio` (the only decoder), `features` (spectrograms and network activations, computed once),
`auditory` (the loudness scale), `weights` and `madmom_compat` (vendored networks).  A stage imports
only other stages and `analyzer.errors`: never the document, the runners, the library or the CLI.
"""

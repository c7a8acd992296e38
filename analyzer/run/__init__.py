"""Running many files: files in, documents out.

`batch` (jobs, resume, atomic writes), `workers` (a process pool that loads the models once per
worker), `spark_engine` (the same on Spark), `tables` (Parquet), `api` (the Python API that
`from analyzer import analyze_file` reaches).  Imports the stages and the document; never the
library, the server or the CLI.
"""

"""The applications on top of the runners: the music library and what serves it.

`store` (the library database: SQLite or PostgreSQL, its scans and indexer), `catalog` (the
identification catalog of `analyze index` / `identify`), `serve` (the Spotify-shaped Web API),
`sqlite_util` (opening and checking SQLite files).  Imports the runners, the document and the
stages; never the CLI.
"""

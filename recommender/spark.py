"""`recommend fit --engine spark`: the same confidence-weighted ALS trained by Spark MLlib.

Local mode (`local[*]`) needs only Java 17 and pyspark; a cluster URL (`spark://host:7077`,
`yarn`) trains on a cluster.  The plays go in as (user, item, confidence) with
`implicitPrefs=True`, so MLlib solves Hu, Koren & Volinsky's objective like `implicit` does;
the factors come back into the same Recommender and the same model files, and every other
scorer (EASE, item-kNN, terms, audio) is fitted as with the default engine.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace

import numpy as np

from analyzer.errors import AnalyzerError

from .dataset import Dataset
from .fit import fit, fit_parts
from .model import ALS_GRID, FitParams, Recommender
from .fusion import FusionWeights
from .models import ALS, ALSParams, weight


def spark_als(data: Dataset, params: ALSParams, *, master: str = "local[*]") -> ALS:
    try:
        from pyspark.ml.recommendation import ALS as SparkALS
        from pyspark.sql import SparkSession
    except ImportError:
        raise AnalyzerError("--engine spark needs pyspark (pip install pyspark) and Java 17") from None
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    try:
        spark = (SparkSession.builder.master(master).appName("recommend-fit")
                 .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false").config("spark.sql.shuffle.partitions", "8")
                 .config("spark.driver.memory", "4g").getOrCreate())
    except Exception as exc:  # noqa: BLE001 - no JVM, bad master URL: one line
        raise AnalyzerError(f"cannot start Spark at {master}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    spark.sparkContext.setLogLevel("ERROR")
    try:
        w = weight(data.plays, params.weighting).tocoo()
        rows = list(zip(w.row.tolist(), w.col.tolist(), w.data.astype(float).tolist()))
        df = spark.createDataFrame(rows, ["user", "item", "confidence"])
        # MLlib scales lambda by each user's and item's number of ratings (ALS-WR); implicit does not:
        # the mean count per user brings the two penalties to the same size
        per_user = max(1.0, data.plays.nnz / max(1, data.plays.shape[0]))
        model = SparkALS(rank=params.factors, regParam=params.regularization / per_user, alpha=params.alpha,
                         maxIter=params.iterations, implicitPrefs=True, userCol="user", itemCol="item",
                         ratingCol="confidence", seed=params.seed, nonnegative=False,
                         coldStartStrategy="nan").fit(df)
        n_users, n_items = data.plays.shape
        uf = np.zeros((n_users, params.factors), dtype=np.float32)
        vf = np.zeros((n_items, params.factors), dtype=np.float32)
        for r in model.userFactors.collect():
            uf[r["id"]] = r["features"]
        for r in model.itemFactors.collect():
            vf[r["id"]] = r["features"]
    finally:
        spark.stop()
    return ALS.from_factors(uf, vf, params)


def fit_spark(data: Dataset, params: FitParams = FitParams(), *, master: str = "local[*]", tune: bool = True) -> Recommender:
    """Settings and fusion weights are chosen as by the default engine; the final ALS runs on Spark."""
    chosen = fit(data, params, tune=tune) if tune else None
    p = replace(params, als=chosen.params.als) if chosen else replace(params, als=replace(ALS_GRID[0], seed=params.seed))
    als = spark_als(data, p.als, master=master)
    rec = fit_parts(data, p, chosen.weights if chosen else FusionWeights(), als=als)
    rec.validation = chosen.validation if chosen else {}
    return rec

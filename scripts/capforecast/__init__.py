"""capforecast: capacity forecasting for cloud fleets.

One importable library behind the Snakemake rules, the notebooks, the tests and
the SageMaker training entry point. One module per stage; rule scripts under
``scripts/`` only read ``snakemake.input/params``, call this package and write.
"""

__version__ = "0.1.0"

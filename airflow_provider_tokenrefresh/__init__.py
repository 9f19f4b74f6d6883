"""Apache Airflow provider that keeps vendor access tokens valid (see README.md).

Nothing heavy is imported here: DAG files import the operator and sensor modules directly.
"""

#: The one place the version lives: the build (hatch) and the provider info read it.
__version__ = "0.2.0"

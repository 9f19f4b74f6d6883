"""Black-box tests of a multi-container deployment: several AIRFLOW_HOMEs, one metadata database."""

"""Airflow plugins shipped with the provider (registered through the ``airflow.plugins`` entry point).

Importing this package imports nothing: Airflow imports the plugin module in every process that
loads plugins (tasks included), so each plugin builds its heavy parts only where they are used.
"""

"""``python -m airflow_provider_tokenrefresh`` is the ``airflow-tokenrefresh`` command."""

from __future__ import annotations

import sys

from airflow_provider_tokenrefresh.cli import main

sys.exit(main())

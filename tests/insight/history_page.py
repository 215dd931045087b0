"""A page with only the History tab, for the real-browser test (`streamlit run` this file)."""

from dashboard.history import history_ui
from dashboard.settings import HistorySettings

history_ui(HistorySettings().history_dir)

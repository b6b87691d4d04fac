"""i2o: the Image2Omics pipeline as a tested package, called by the numbered notebooks."""

import os as _os

if _os.environ.get("I2O_BOOK_TABLES") == "1":  # set by the runner for the notebooks it executes
    from i2o_utils.reporting import format_dataframes_for_book as _format

    _format()

"""``python -m capforecast.aws``: the operations CLI (:mod:`capforecast.aws.ops`)."""

import sys

from capforecast.aws.ops import main

sys.exit(main())

"""The local AWS endpoint: moto's server, enforcing IAM authorization without re-checking SigV4.

moto re-derives the signature of a form-encoded request (SNS, RDS, ElastiCache, IAM, STS) from
its parsed parameters, re-encoded as botocore encodes them; the Rust SDK percent-encodes some
characters differently (parentheses, spaces, ...), so moto would refuse valid requests with
SignatureDoesNotMatch. Without that check the caller's access key must still exist, and its
policies still decide every action (stack.sh turns enforcement on once the stack is seeded).
"""

import sys

from moto.iam.access_control import IAMRequestBase
from moto.server import main

IAMRequestBase.check_signature = lambda self: None

if __name__ == "__main__":
    sys.exit(main())

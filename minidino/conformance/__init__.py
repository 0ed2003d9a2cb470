"""The conformance kit: the golden-vector generator and runner, and the runner of the official code
(the black-box reference that judges parity)."""

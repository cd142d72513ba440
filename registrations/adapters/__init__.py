"""One small adapter per remote API. Each raises UpstreamError (and its subclasses), never a raw HTTP error."""

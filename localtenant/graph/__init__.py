"""Microsoft Graph v1.0: the directory objects the product manages (applications, service principals,
credentials, app role assignments, delegated permission grants)."""

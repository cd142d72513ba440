"""Azure Functions entry point (Python v2 programming model): create the app, register the blueprint."""

import azure.functions as func

from registrations.http import bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(bp)

"""The HTTP edge: app factory, one APIRouter module per area, request/response schemas, middleware."""

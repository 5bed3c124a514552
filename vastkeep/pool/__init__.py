"""The warm pool: rent to the desired size, replace what dies, lease to client services (planned: issue 10).

Logger: ``vastkeep.pool``.
"""

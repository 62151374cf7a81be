"""vhost-user: the transport that lets a real guest driver (Linux under UML) meet the reference device."""

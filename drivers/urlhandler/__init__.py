"""pyserial URL handlers of ORConsole (`sim://`), found through serial.protocol_handler_packages."""

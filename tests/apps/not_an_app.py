sio = 42

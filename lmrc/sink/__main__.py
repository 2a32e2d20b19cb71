from lmrc.sink.service import main

main()

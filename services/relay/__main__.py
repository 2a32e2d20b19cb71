from services.relay.service import main

main()

from services.proposer.service import main

main()
